;; The dialogs of Discover directions and Fit direction from layers, driven
;; through the accessibility bus: the model drop-down with the embedded
;; model, their own settings and a collapsed Advanced section. Discover
;; (2 directions, 10 steps set in the dialog) adds its layer group; Fit is
;; cancelled and leaves the image as it was. Screenshots of both.
;; needs: default-model
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-006.png" coat.png
;; ui: title="Discover directions" "current=Model:fashion-mnist-32" current=Look\ at:picture "value=How many:3" set=How\ many:2 "set=Quality (steps):10" collapsed=Advanced "shot=$SHOTS/discover.png" press=OK
;; ui: title="Fit direction from layers" "current=Model:fashion-mnist-32" current=Compared\ with:samples collapsed=Advanced "shot=$SHOTS/fit.png" press=Cancel
;; post: test -s "$SHOTS/discover.png" && test -s "$SHOTS/fit.png"

(define img (load-image "coat.png"))
(define photo (first-layer img))
(define group (plug-in-ddim-discover-directions #:run-mode RUN-INTERACTIVE #:image img
                #:drawables (vector photo)))
(check (= (length (children group)) 2) "Discover added a group of 2 directions")
(gimp-image-clean-all img)
(define before (layer-count img))
(catch 'cancelled (plug-in-ddim-fit-direction #:run-mode RUN-INTERACTIVE #:image img
                    #:drawables (vector photo)))
(check (= (layer-count img) before) "Cancel added no layer")
(check (not (gimp-image-is-dirty img)) "Cancel left the image clean")
(test-done)
