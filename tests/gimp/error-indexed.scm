;; Indexed images are refused.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-invert failed
;; expect-output: Indexed images are not supported

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(gimp-image-convert-indexed img CONVERT-DITHER-NONE CONVERT-PALETTE-GENERATE 16 #f #f "")
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-cifar))
(expect-failure img call)
(call)
