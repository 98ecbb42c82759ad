;; A model folder that does not exist.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-invert failed
;; expect-output: Model folder “/nonexistent/ddim-model” does not exist

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder "/nonexistent/ddim-model"))
(expect-failure img call)
(call)
