;; A layer smaller than the model can take.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-invert failed
;; expect-output: Layer “Photo” is too small (3×2 pixels); this model needs at least 4×4

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(gimp-layer-resize photo 3 2 0 0)
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-cifar))
(expect-failure img call)
(call)
