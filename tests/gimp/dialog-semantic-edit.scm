;; The Semantic edit dialog, driven through the accessibility bus: the
;; model list holds the embedded model (and "Other folder…"), the direction
;; list its directions with their descriptions, strength starts at 1.0 and
;; the technical settings sit in a collapsed Advanced section, and there is
;; a preview. Choosing
;; "sneaker" and pressing OK adds the edit; the dialog opens again with the
;; last values (sneaker), and Cancel leaves the image as it was.
;; needs: default-model
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-006.png" coat.png
;; ui: title="Semantic edit" "has-item=Model:fashion-mnist-32 (comes with the plug-in)" "has-item=Model:Other folder…" "current=Model:fashion-mnist-32" "has-item=Direction:sneaker — toward sneaker" "has-item=Direction:pca-1 — principal component 1" value=Strength:1.0 current=Result:model "value=Quality (steps):20" collapsed=Advanced has=Preview select=Direction:sneaker preview "shot=$SHOTS/semantic-edit.png" press=OK
;; ui: title="Semantic edit" current=Direction:sneaker value=Strength:1.0 press=Cancel
;; post: "$CHECK" classify edit.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --expect sneaker
;; post: test -s "$SHOTS/semantic-edit.png"

(define img (load-image "coat.png"))
(define photo (first-layer img))
(define edit (plug-in-ddim-semantic-edit #:run-mode RUN-INTERACTIVE #:image img
               #:drawables (vector photo)))
(check (= (layer-count img) 2) "OK added one layer")
(check (string=? (gimp-item-get-name edit)
                 (string-append "Edit of " (gimp-item-get-name photo) ": sneaker ×1"))
       "the edit is the chosen direction at strength 1")
(export-layer edit "edit.png")
(gimp-image-clean-all img)
(define cancelled (catch 'cancelled
                    (plug-in-ddim-semantic-edit #:run-mode RUN-INTERACTIVE #:image img
                      #:drawables (vector photo))))
(check (= (layer-count img) 2) "Cancel added no layer")
(check (not (gimp-image-is-dirty img)) "Cancel left the image clean")
(test-done)
