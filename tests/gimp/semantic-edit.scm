;; Semantic edit with the 1-channel fixture model and PCA directions made
;; by the CLI (the fixture has no directions.safetensors), through an
;; elliptic selection, keeping the photo's detail (result "detail"):
;; strength 0 gives the original exactly; an edit
;; changes the inside and leaves every pixel outside the selection
;; bit-identical; run on the latent layer, the edit works on its source
;; layer and reuses the latent; a native-size edit with a pooled direction
;; (a file holding one direction, given by its path alone).
;; pre: "$CLI" directions pca "$MODEL_VARIANT" -k 2 -n 4 --steps 5 -q -o dirs.safetensors
;; pre: "$CLI" directions pca "$MODEL_VARIANT" -k 1 -n 4 --steps 5 --pool -q -o pooled.safetensors
;; env: G_MESSAGES_DEBUG=ddim-inversion
;; expect-output: reusing the latent on layer “Latent of Photo”
;; post: "$CHECK" compare sample-gray.png zero.png --max-diff 0
;; post: "$CHECK" compare sample-gray.png edited.png --outside mask.png --max-diff 0
;; post: "$CHECK" compare sample-gray.png edited.png --inside mask.png --min-diff 3
;; post: "$CHECK" compare sample-gray.png native.png --outside mask.png --max-diff 0

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define dirs (path "dirs.safetensors"))
(gimp-image-select-ellipse img CHANNEL-OP-REPLACE 6 5 16 18)
(export-selection img "mask.png")

(define (edit layer direction strength resize)
  (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector layer) #:model-folder model-variant #:steps 6 #:resize resize
    #:direction direction #:strength strength #:result "detail"))

; Strength 0: the original, bit for bit.
(define zero (edit photo (string-append dirs "#pca-1") 0.0 "fit"))
(check (string=? (gimp-item-get-name zero) "Edit of Photo: pca-1 ×0") "edit layer name")
(check (equal? (size zero) '(16 18)) "edit layer: the selection's bounds")
(check (equal? (offsets zero) '(6 5)) "edit layer: at the selection's offsets")
(export-visible img "zero.png")
(gimp-item-set-visible zero #f)

; A latent to reuse (made with the edit's settings: Invert to latent's
; default method is BDIA, the edit's plain DDIM), then the edit run on the
; latent layer.
(define lat (plug-in-ddim-invert #:run-mode RUN-NONINTERACTIVE #:image img
              #:drawables (vector photo) #:model-folder model-variant #:steps 6
              #:method "ddim"))
(gimp-item-set-visible lat #f)
(define before (layer-count img))
(define edited (edit lat (string-append dirs "#component-2") 1.5 "fit"))
(check (string=? (gimp-item-get-name edited) "Edit of Photo: pca-2 ×1.5")
       "component-2 is pca-2; named after the source layer")
(check (= (layer-count img) (+ before 1)) "one layer added")
(check (< (gimp-image-get-item-position img edited) (gimp-image-get-item-position img lat))
       "the edit is above the latent layer")
(export-visible img "edited.png")
(gimp-item-set-visible edited #f)

; Native size, a pooled direction from a file holding only it.
(define native (edit photo (path "pooled.safetensors") -1.0 "native"))
(check (string=? (gimp-item-get-name native) "Edit of Photo: pca-1 ×-1") "native: name")
(check (equal? (size native) '(16 18)) "native: size")
(export-visible img "native.png")
(test-done)
