;; Discover directions and Fit direction from layers on a model that ships
;; no directions (the tiny-cifar fixture, 3 channels, 16x16): before,
;; Semantic edit by name fails and says how to make directions; Discover
;; (the model's own pictures) makes samples-pca-1 and -2, Fit (the pattern
;; layer against the model's pictures) makes "warmer"; Semantic edit then
;; finds both by name, and each changes the picture.
;; post: "$CHECK" compare pattern-16.png pca.png --min-diff 3
;; post: "$CHECK" compare pattern-16.png fitted.png --min-diff 3

(define img (load-image "pattern-16.png"))
(define photo (first-layer img))
(gimp-item-set-name photo "Pattern")
(define (edit direction)
  (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-cifar #:direction direction #:steps 6))

(define before (layer-count img))
(check (eq? (catch 'failed (edit "samples-pca-1")) 'failed) "no directions yet: the edit fails")
(check (= (layer-count img) before) "and leaves the image as it was")

(define group (plug-in-ddim-discover-directions #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:model-folder model-cifar #:source "samples"
                #:count 2 #:steps 6))
(check (= (length (children group)) 2) "two directions shown")
(check (string=? (gimp-item-get-name (car (children group))) "samples-pca-1: −1 | 0 | +1")
       "the first is samples-pca-1")
(gimp-item-set-visible group #f)
(define e1 (edit "samples-pca-1"))
(export-layer e1 "pca.png")

(define fitted (plug-in-ddim-fit-direction #:run-mode RUN-NONINTERACTIVE #:image img
                 #:drawables (vector photo) #:model-folder model-cifar #:name "warmer"
                 #:steps 6))
(check (string=? (gimp-item-get-name fitted) "Direction warmer") "the fit's group")
(define e2 (edit "warmer"))
(check (string=? (gimp-item-get-name e2) "Edit of Pattern: warmer ×1") "edited along it")
(export-layer e2 "fitted.png")

; Bad input: a name with a space is refused, the image untouched.
(expect-failure img
  (lambda () (plug-in-ddim-fit-direction #:run-mode RUN-NONINTERACTIVE #:image img
               #:drawables (vector photo) #:model-folder model-cifar #:name "two words")))
(test-done)
