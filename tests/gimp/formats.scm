;; Gray, RGBA, non-square layers with offsets, native size with padding,
;; selections and every inversion method.
;; post: "$CHECK" compare pattern-rgba.png rgba-recon.png --channels alpha --max-diff 1

; RGBA: alpha kept (1-channel model on an RGB image: luminance in, gray out).
(define img (image-with-layer "pattern-rgba.png" 50 30 3 2))
(define photo (find-layer img "Photo"))
(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:model-folder model-variant #:steps 5))
(define rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector lat) #:model-folder model-variant))
(check (equal? (offsets rec) '(3 2)) "RGBA: offsets")
(check (gimp-drawable-has-alpha rec) "RGBA: reconstruction has alpha")
(export-layer rec "rgba-recon.png")

; Native size: a 30x22 layer is padded to 32x24 for the model and cropped back.
(gimp-layer-scale photo 30 22 #f)
(gimp-layer-set-offsets photo 9 4)
(define lat-n (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-variant #:steps 4
                #:resize "native"))
(check (equal? (size lat-n) '(30 22)) "native: latent layer size")
(define rec-n (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector lat-n) #:model-folder model-variant))
(check (equal? (size rec-n) '(30 22)) "native: reconstruction size")
(check (equal? (offsets rec-n) '(9 4)) "native: reconstruction offsets")

; A selection: the latent covers the selection's bounds within the layer.
(gimp-image-select-rectangle img CHANNEL-OP-REPLACE 12 6 20 16)
(define lat-s (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-cifar #:steps 4))
(check (equal? (size lat-s) '(20 16)) "selection: latent layer size")
(check (equal? (offsets lat-s) '(12 6)) "selection: latent layer offsets")
(gimp-selection-none img)
(define rec-s (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector lat-s) #:model-folder model-cifar))
(check (equal? (size rec-s) '(20 16)) "selection: reconstruction size")
(check (equal? (offsets rec-s) '(12 6)) "selection: reconstruction offsets")

; Every method runs and reconstructs (3-channel model).
(for-each
  (lambda (method)
    (let* ((l (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-cifar #:steps 3
                #:method method))
           (r (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector l) #:model-folder model-cifar)))
      (check (equal? (size r) '(30 22)) (string-append method ": reconstruction size"))))
  '("ddim" "fixed-point" "edict" "bdia"))

; Gray image: a 3-channel model gets the gray replicated; results are gray.
(define gimg (image-with-layer "pattern-rgb.png" 40 24 0 0))
(gimp-image-convert-grayscale gimg)
(define gphoto (find-layer gimg "Photo"))
(define glat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image gimg
               #:drawables (vector gphoto) #:model-folder model-cifar #:steps 4))
(check (gimp-drawable-is-gray glat) "gray: latent layer is gray")
(define grec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image gimg
               #:drawables (vector glat) #:model-folder model-cifar))
(check (gimp-drawable-is-gray grec) "gray: reconstruction is gray")
(check (equal? (size grec) '(40 24)) "gray: reconstruction size")
(test-done)
