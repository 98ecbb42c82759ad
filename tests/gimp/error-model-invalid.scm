;; A model folder whose config.json is broken.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-invert failed
;; expect-output: broken-model” cannot be used:
;; expect-output: Choose a diffusers UNet2DModel folder.

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder broken-model))
(expect-failure img call)
(call)
