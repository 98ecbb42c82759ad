;; Reconstructing a latent with another model than it was made with.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-reconstruct failed
;; expect-output: The latent on layer “Latent of Photo” was made with another model than the one in “
;; expect-output: Set “Model folder” to the model it was inverted with

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:model-folder model-cifar #:steps 3))
(define (call)
  (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector lat) #:model-folder model-variant))
(expect-failure img call)
(call)
