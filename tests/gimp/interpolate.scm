;; Interpolate latents between two Fashion-MNIST samples with the 1-channel
;; fixture model: a layer group "Interpolation of Photo and Second" with N
;; frames at the first layer's size and offsets, Frame 1 at the bottom and
;; equal to Reconstruct's result for the first layer (whose latent is
;; reused); then from a latent layer (its settings are used for the other
;; layer) with h interpolated as well; no second layer is an error.
;; pre: "$CHECK" mnist second.png 1
;; env: G_MESSAGES_DEBUG=ddim-inversion
;; expect-output: reusing the latent on layer “Latent of Photo”
;; post: "$CHECK" compare recon.png frame-1.png --max-diff 0

(define img (image-with-layer "sample-gray.png" 40 36 5 3))
(define photo (find-layer img "Photo"))
(define second (gimp-file-load-layer RUN-NONINTERACTIVE img (path "second.png")))
(gimp-image-insert-layer img second 0 0)
(gimp-item-set-name second "Second")
(gimp-layer-set-offsets second 9 6)

(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:model-folder model-variant #:steps 5
              #:method "ddim"))
(define rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector lat) #:model-folder model-variant))
(export-layer rec "recon.png")

(define before (layer-count img))
(define group (plug-in-ddim-interpolate #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-variant #:steps 5
                #:second-layer second #:frames 4))
(check (= (layer-count img) (+ before 1)) "one layer group added")
(check (gimp-item-is-group group) "the result is a layer group")
(check (string=? (gimp-item-get-name group) "Interpolation of Photo and Second") "group name")
(define frames (children group))
(check (= (length frames) 4) "4 frames")
(check (equal? (map gimp-item-get-name frames)
               '("Frame 4 of 4" "Frame 3 of 4" "Frame 2 of 4" "Frame 1 of 4"))
       "frames named Frame i of N, Frame 1 at the bottom")
(for-each (lambda (f)
            (check (equal? (size f) '(28 28)) "frame: the first layer's size")
            (check (equal? (offsets f) '(5 3)) "frame: the first layer's offsets"))
          frames)
(export-layer (list-ref frames 3) "frame-1.png")

(define group2 (plug-in-ddim-interpolate #:run-mode RUN-NONINTERACTIVE #:image img
                 #:drawables (vector lat) #:model-folder model-variant #:steps 50
                 #:second-layer second #:frames 3 #:interpolate-h #t))
; GIMP makes the name unique ("... #1").
(define name2 (gimp-item-get-name group2))
(note "second group: " name2)
(check (and (>= (string-length name2) 33)
            (string=? (substring name2 0 33) "Interpolation of Photo and Second"))
       "from the latent layer: named after its source")
(check (= (length (children group2)) 3) "3 frames")
(check (= (layer-count img) (+ before 2)) "a second group added")

; Without a second layer: an error, and the image is left as it was.
(expect-failure img
  (lambda () (plug-in-ddim-interpolate #:run-mode RUN-NONINTERACTIVE #:image img
               #:drawables (vector photo) #:model-folder model-variant #:steps 5)))
(test-done)
