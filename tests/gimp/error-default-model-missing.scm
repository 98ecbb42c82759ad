;; No model folder given and the embedded model is not installed
;; (DDIM_DEFAULT_MODEL points where it would be).
;; env: DDIM_DEFAULT_MODEL=/nonexistent/models/fashion-mnist-32
;; expect-exit: 70
;; expect-output: The model that comes with the plug-in is not installed (there is no folder “/nonexistent/models/fashion-mnist-32”)

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector photo)))
(expect-failure img call)
(call)
