;; The plug-in with a photo-model folder of the ADM family: the fixture
;; torch/adm/uncond-256-like (openai/guided-diffusion model.pt and
;; model_flags.txt; 3 channels, 32x32, learned sigma, scale-shift norm,
;; resblock up/down), used as it is, without conversion. An RGB pattern
;; inverted at its own size (40x24) with the exactly invertible methods is
;; reconstructed to a high PSNR (random fixture weights: plain DDIM is only
;; run); a semantic edit keeping the detail (result "detail") with PCA directions made by the CLI (the fixture has
;; no directions file), through an elliptic selection: strength 0 gives the
;; original exactly, an edit changes the inside and leaves every pixel
;; outside bit-identical.
;; pre: ln -s "$MODEL_CIFAR/../../torch/adm/uncond-256-like" adm
;; pre: "$CLI" info adm | grep -Eq '^family: +adm$'
;; pre: "$CLI" directions pca adm -k 2 -n 4 --steps 5 -q -o dirs.safetensors
;; post: "$CHECK" compare pattern-rgb.png recon-edict.png --min-psnr 40
;; post: "$CHECK" compare pattern-rgb.png recon-bdia.png --min-psnr 40
;; post: "$CHECK" compare pattern-rgb.png recon-ddim.png
;; post: "$CHECK" compare pattern-rgb.png zero.png --max-diff 0
;; post: "$CHECK" compare pattern-rgb.png edited.png --outside mask.png --max-diff 0
;; post: "$CHECK" compare pattern-rgb.png edited.png --inside mask.png --min-diff 3

(define adm (path "adm"))
(define dirs (path "dirs.safetensors"))

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))

(define (round-trip method file)
  (let* ((lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder adm #:steps 10
                #:method method #:resize "native"))
         (rec (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector lat) #:model-folder adm)))
    (check (equal? (size rec) '(40 24)) (string-append method ": reconstruction is 40x24"))
    (export-layer rec file)))

(round-trip "edict" "recon-edict.png")
(round-trip "bdia" "recon-bdia.png")
(round-trip "ddim" "recon-ddim.png")

; The edit, on a fresh image of the same pattern.
(define img2 (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo2 (find-layer img2 "Photo"))
(gimp-image-select-ellipse img2 CHANNEL-OP-REPLACE 8 4 24 16)
(export-selection img2 "mask.png")

(define (edit direction strength)
  (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img2
    #:drawables (vector photo2) #:model-folder adm #:steps 6 #:resize "fit"
    #:direction direction #:strength strength #:result "detail"))

(define zero (edit (string-append dirs "#pca-1") 0.0))
(check (equal? (size zero) '(24 16)) "edit layer: the selection's bounds")
(check (equal? (offsets zero) '(8 4)) "edit layer: at the selection's offsets")
(export-visible img2 "zero.png")
(gimp-item-set-visible zero #f)

(define edited (edit (string-append dirs "#pca-2") 40.0))
(check (string=? (gimp-item-get-name edited) "Edit of Photo: pca-2 ×40") "edit layer name")
(export-visible img2 "edited.png")
(test-done)
