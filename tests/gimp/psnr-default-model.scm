;; The embedded default model (models/fashion-mnist-32, trained by the
;; project): a Fashion-MNIST test image, inverted with plain DDIM at 50
;; steps, fitted to the model size and reconstructed, reaches 23 dB PSNR
;; (measured 24.9 dB with the shipped model, 3,000 steps; the 32x32 padded
;; image gives 26.6 dB in test-default-model, the fit to 32x32 and back
;; costs the rest).
;; needs: default-model
;; post: "$CHECK" compare sample-gray.png recon.png --min-psnr 23

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:steps 50 #:method "ddim" #:resize "fit"))
(define rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector lat)))
(export-layer rec "recon.png")
(test-done)
