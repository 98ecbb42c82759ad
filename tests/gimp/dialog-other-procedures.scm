;; The dialogs of Invert to latent, Reconstruct and Interpolate latents,
;; driven through the accessibility bus: each has the model drop-down with
;; the embedded model chosen, its technical settings in a collapsed
;; Advanced section (Interpolate: the next layer offered as the second
;; one, the frame count set to 3, 5 steps); OK adds the procedure's layer (Interpolate: its layer
;; group). A screenshot of each is saved.
;; needs: default-model
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-006.png" coat.png
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-000.png" boot.png
;; ui: title="Invert to latent" "has-item=Model:fashion-mnist-32 (comes with the plug-in)" "has-item=Model:Other folder…" "current=Model:fashion-mnist-32" "value=Quality (steps):20" collapsed=Advanced "shot=$SHOTS/invert.png" press=OK
;; ui: title="Reconstruct" "current=Model:fashion-mnist-32" "has-item=Model:Other folder…" "shot=$SHOTS/reconstruct.png" press=OK
;; ui: title="Interpolate latents" "current=Model:fashion-mnist-32" set=Frames:3 "set=Quality (steps):5" collapsed=Advanced "shot=$SHOTS/interpolate.png" press=OK
;; post: test -s "$SHOTS/invert.png" && test -s "$SHOTS/reconstruct.png" && test -s "$SHOTS/interpolate.png"
;; post: "$CHECK" compare coat.png reconstruction.png --min-psnr 15

(define img (load-image "coat.png"))
(define photo (first-layer img))
(define boot (gimp-file-load-layer RUN-NONINTERACTIVE img (path "boot.png")))
(gimp-image-insert-layer img boot 0 1)
(gimp-item-set-name boot "Boot")

(define lat (plug-in-ddim-invert #:run-mode RUN-INTERACTIVE #:image img
              #:drawables (vector photo)))
(check (string=? (gimp-item-get-name lat)
                 (string-append "Latent of " (gimp-item-get-name photo)))
       "Invert to latent added the latent layer")
(define rec (plug-in-ddim-reconstruct #:run-mode RUN-INTERACTIVE #:image img
              #:drawables (vector lat)))
(check (string=? (gimp-item-get-name rec)
                 (string-append "Reconstruction of " (gimp-item-get-name photo)))
       "Reconstruct added the reconstruction")
(export-layer rec "reconstruction.png")
; The dialog offers the next layer (Boot) as the second one.
(define group (plug-in-ddim-interpolate #:run-mode RUN-INTERACTIVE #:image img
                #:drawables (vector photo)))
(check (= (length (children group)) 3) "Interpolate latents added 3 frames")
(test-done)
