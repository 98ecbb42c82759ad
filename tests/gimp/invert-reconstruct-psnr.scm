;; A Fashion-MNIST sample, inverted and reconstructed with the exactly
;; invertible methods on the 1-channel fixture model: the reconstruction
;; must reach a high PSNR (the methods are exact up to float32 round-off and
;; 8-bit quantisation; random fixture weights, so plain DDIM is not held to
;; a threshold, only run).
;; post: "$CHECK" compare sample-gray.png recon-edict.png --min-psnr 40
;; post: "$CHECK" compare sample-gray.png recon-bdia.png --min-psnr 40
;; post: "$CHECK" compare sample-gray.png recon-ddim.png

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))

(define (round-trip method file)
  (let* ((lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-variant #:steps 10
                #:method method #:resize "native"))
         (rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector lat) #:model-folder model-variant)))
    (check (equal? (size rec) '(28 28)) (string-append method ": reconstruction is 28x28"))
    (export-layer rec file)))

(round-trip "edict" "recon-edict.png")
(round-trip "bdia" "recon-bdia.png")
(round-trip "ddim" "recon-ddim.png")
(test-done)
