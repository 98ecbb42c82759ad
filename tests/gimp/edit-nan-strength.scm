;; A NaN strength never reaches the plug-in: GObject refuses a non-finite
;; (or out-of-range) value for a double argument in the caller, Script-Fu
;; here ("invalid or out of range for property 'strength'", a CRITICAL), and
;; the call runs with the argument's default (1). The plug-in's own check
;; ("The strength must be a finite number") is therefore unreachable
;; through the PDB in GIMP 3.0.4. This test pins that down: should GIMP
;; ever pass NaN through, the layer name below changes and the test fails
;; (it should then expect exit 70 and the plug-in's message).
;; pre: "$CLI" directions pca "$MODEL_VARIANT" -k 1 -n 2 --steps 3 -q -o dirs.safetensors
;; expect-output: is invalid or out of range for property 'strength'

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define nan (sqrt -1.0))
(note "strength: " (number->string nan))
(define result
  (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-variant #:steps 3
    #:direction (path "dirs.safetensors") #:strength nan))
(check (string=? (gimp-item-get-name result) "Edit of Photo: pca-1 ×1")
       "the default strength was used")
(test-done)
