;; Reconstruct on a layer without a latent says to run Invert to latent first.
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-reconstruct failed
;; expect-output: Layer “Photo” has no latent; run Filters ▸ Diffusion ▸ Invert to latent… first

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-cifar))
(expect-failure img call)
(call)
