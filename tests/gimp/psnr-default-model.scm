;; The embedded default model (models/fashion-mnist-32, trained by the
;; project): a Fashion-MNIST test image, inverted with plain DDIM at 50
;; steps, fitted to the model size and reconstructed, reaches 20 dB PSNR
;; (a floor with margin; raise it to the model's documented PSNR minus a
;; margin). Skipped until the model is there.
;; needs: default-model
;; post: "$CHECK" compare sample-gray.png recon.png --min-psnr 20

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:steps 50 #:method "ddim" #:resize "fit"))
(define rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector lat)))
(export-layer rec "recon.png")
(test-done)
