;; Under a German locale the plug-in registers German menu labels (pluginrc)
;; and speaks German in its errors.
;; env: LANG=de_DE.UTF-8
;; env: LC_ALL=de_DE.UTF-8
;; env: LANGUAGE=de
;; post: grep -F '"In Latent invertieren…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Rekonstruieren…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Semantisch bearbeiten…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Latents interpolieren…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F 'Ebene „Photo“ hat keinen Latent' output.txt
;; post: grep -F 'Es gibt keine Richtungsdatei „/nonexistent/dirs.safetensors“.' output.txt

(define img (image-with-layer "pattern-rgb.png" 40 24 0 0))
(define photo (find-layer img "Photo"))
(catch #f (plug-in-ddim-reconstruct #:run-mode RUN-NONINTERACTIVE #:image img
            #:drawables (vector photo) #:model-folder model-cifar))
(catch #f (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
            #:drawables (vector photo) #:model-folder model-cifar
            #:direction "/nonexistent/dirs.safetensors"))
(test-done)
