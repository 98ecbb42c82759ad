;; Latents survive XCF save and load: the parasites are there after loading
;; and reconstruct bit-identically; the reconstruction equals
;; `ddim reconstruct` of the same latent (saved with latent-file); a
;; non-square layer with offsets gets its reconstruction at its own size
;; and offsets.
;; post: "$CHECK" compare small-before.png small-after.png --max-diff 0
;; post: "$CHECK" compare photo-before.png photo-after.png --max-diff 0
;; post: "$CLI" reconstruct -q "$MODEL_CIFAR" small.safetensors -o small-cli.png
;; post: "$CHECK" compare small-before.png small-cli.png --max-diff 1 --min-psnr 60

(define img (image-with-layer "pattern-rgb.png" 64 48 5 7))
(define photo (find-layer img "Photo"))
(define small (gimp-file-load-layer RUN-NONINTERACTIVE img (path "pattern-16.png")))
(gimp-image-insert-layer img small 0 0)
(gimp-item-set-name small "Small")
(gimp-layer-set-offsets small 44 30)

(define (invert layer latent-file)
  (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img #:drawables (vector layer)
    #:model-folder model-cifar #:steps 8 #:method "ddim" #:resize "fit"
    #:latent-file latent-file))
(define (reconstruct image layer)
  (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image image
    #:drawables (vector layer) #:model-folder model-cifar))

(define lat-small (invert small (path "small.safetensors")))
(define lat-photo (invert photo ""))
(check (string=? (gimp-item-get-name lat-photo) "Latent of Photo") "latent layer name")
(check (equal? (size lat-photo) '(40 24)) "latent layer has the layer's size")
(check (equal? (offsets lat-photo) '(5 7)) "latent layer has the layer's offsets")

(define rec-small (reconstruct img lat-small))
(define rec-photo (reconstruct img lat-photo))
(check (string=? (gimp-item-get-name rec-photo) "Reconstruction of Photo") "reconstruction name")
(check (equal? (size rec-photo) '(40 24)) "reconstruction has the original layer's size")
(check (equal? (offsets rec-photo) '(5 7)) "reconstruction has the original layer's offsets")
(check (equal? (offsets rec-small) '(44 30)) "small reconstruction offsets")
(export-layer rec-small "small-before.png")
(export-layer rec-photo "photo-before.png")
(check (= (layer-count img) 6) "two latents and two reconstructions added")

(gimp-file-save RUN-NONINTERACTIVE img (path "roundtrip.xcf") -1)
(gimp-image-delete img)

(define img2 (load-image "roundtrip.xcf"))
(define lat-small2 (find-layer img2 "Latent of Small"))
(define lat-photo2 (find-layer img2 "Latent of Photo"))
(define parasites (let ((p (gimp-item-get-parasite-list lat-photo2))) (if (vector? p) (vector->list p) p)))
(check (member "ddim-inversion/latent" parasites) "the latent parasite survived XCF")
(check (member "ddim-inversion/source" parasites) "the source parasite survived XCF")
(define rec-small2 (reconstruct img2 lat-small2))
(define rec-photo2 (reconstruct img2 lat-photo2))
(check (equal? (offsets rec-photo2) '(5 7)) "offsets after XCF")
(export-layer rec-small2 "small-after.png")
(export-layer rec-photo2 "photo-after.png")
(test-done)
