;; A selection that does not overlap the layer.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-invert failed
;; expect-output: The selection does not overlap layer “Photo”

(define img (image-with-layer "pattern-rgb.png" 80 60 0 0))
(define photo (find-layer img "Photo"))
(gimp-image-select-rectangle img CHANNEL-OP-REPLACE 50 40 20 10)
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-cifar))
(expect-failure img call)
(call)
