; Helpers for the GIMP batch tests (Script-Fu, GIMP 3.0). run-gimp-tests
; defines these before loading this file:
;   test-dir       a scratch folder for this test (files the post checks read)
;   model-cifar    fixture model, 3 channels, 16x16
;   model-variant  fixture model, 1 channel, 32x32
;   default-model  models/fashion-mnist-32 in the source tree (may be missing)
;   broken-model   a folder with an invalid config.json
; and generates, in test-dir: sample-gray.png (a 28x28 Fashion-MNIST image),
; pattern-rgb.png (40x24), pattern-rgba.png (40x24, alpha gradient),
; pattern-16.png (16x16).

(script-fu-use-v3)

(define (path name) (string-append test-dir "/" name))

(define (note . parts) (gimp-message (apply string-append parts)))

(define (check ok what)
  (if (not ok)
      (error (string-append "CHECK FAILED: " what))
      (note "check ok: " what)))

(define (test-done) (note "TEST-OK"))

(define (layer-count img) (vector-length (gimp-image-get-layers img)))

(define (load-image file) (gimp-file-load RUN-NONINTERACTIVE (path file)))

(define (first-layer img) (vector-ref (gimp-image-get-layers img) 0))

(define (find-layer img name)
  (let loop ((layers (vector->list (gimp-image-get-layers img))))
    (cond ((null? layers) (error (string-append "no layer named " name)))
          ((string=? (gimp-item-get-name (car layers)) name) (car layers))
          (else (loop (cdr layers))))))

(define (offsets layer) (gimp-drawable-get-offsets layer))

(define (size layer)
  (list (gimp-drawable-get-width layer) (gimp-drawable-get-height layer)))

; An image with one layer loaded from FILE, placed at (X, Y) on a canvas of
; W x H.
(define (image-with-layer file w h x y)
  (let* ((img (gimp-image-new w h RGB))
         (layer (gimp-file-load-layer RUN-NONINTERACTIVE img (path file))))
    (gimp-image-insert-layer img layer 0 0)
    (gimp-layer-set-offsets layer x y)
    (gimp-item-set-name layer "Photo")
    img))

; Writes LAYER alone, at its own size, to FILE (PNG) in test-dir.
(define (export-layer layer file)
  (let* ((src (gimp-item-get-image layer))
         (img (gimp-image-new-with-precision (gimp-drawable-get-width layer)
                                             (gimp-drawable-get-height layer)
                                             (gimp-image-get-base-type src)
                                             (gimp-image-get-precision src)))
         (copy (gimp-layer-new-from-drawable layer img)))
    (gimp-image-insert-layer img copy 0 0)
    (gimp-layer-set-offsets copy 0 0)
    (gimp-file-save RUN-NONINTERACTIVE img (path file) -1)
    (gimp-image-delete img)))

; Runs THUNK, which must fail, and checks that IMG kept its layers and is
; not dirtied; prints ERROR-PATH-CHECKED. The test then makes the same
; call again outside a catch, so that the batch ends with the plug-in's own
; error (exit status 70 and its message).
(define (expect-failure img thunk)
  (gimp-image-clean-all img)
  (let* ((before (layer-count img))
         (result (catch 'failed (thunk) 'succeeded)))
    (check (eq? result 'failed) "the call failed")
    (check (= (layer-count img) before) "the layer count is unchanged")
    (check (not (gimp-image-is-dirty img)) "the image is unchanged (not dirty)")
    (note "ERROR-PATH-CHECKED")))

; Writes what IMG shows (its visible layers merged) to FILE (PNG) in test-dir.
(define (export-visible img file)
  (let ((dup (gimp-image-duplicate img)))
    (for-each (lambda (l) (if (not (gimp-item-get-visible l)) (gimp-image-remove-layer dup l)))
              (vector->list (gimp-image-get-layers dup)))
    (gimp-image-merge-visible-layers dup CLIP-TO-IMAGE)
    (gimp-file-save RUN-NONINTERACTIVE dup (path file) -1)
    (gimp-image-delete dup)))

; Writes IMG's selection mask (255 selected, 0 not) to FILE (PNG) in test-dir.
(define (export-selection img file)
  (let* ((channel (gimp-selection-save img))
         (out (gimp-image-new (gimp-image-get-width img) (gimp-image-get-height img) GRAY))
         (layer (gimp-layer-new-from-drawable channel out)))
    (gimp-image-insert-layer out layer 0 0)
    (gimp-file-save RUN-NONINTERACTIVE out (path file) -1)
    (gimp-image-delete out)
    (gimp-image-remove-channel img channel)))

; The children of a layer group, top first.
(define (children group) (vector->list (gimp-item-get-children group)))
