;; Discover directions and Fit direction from layers on the embedded model.
;; Discover (this picture, 2 directions) adds a layer group with one
;; -1 | 0 | +1 strip per direction and saves the directions among the
;; user's, where Semantic edit finds them by name. Fit, with three trousers
;; (samples 2, 3, 5) as the examples against the model's own pictures,
;; makes "my-trousers"; editing the coat along it raises the classifier's
;; trouser probability.
;; needs: default-model
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-006.png" coat.png
;; pre: for i in 2 3 5; do cp "$DEFAULT_MODEL/samples/fashion-mnist-test-00$i.png" trouser-$i.png; done
;; post: "$CHECK" compare coat.png discovered.png --min-diff 3
;; post: "$CHECK" classify fitted.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --toward trouser coat.png
;; post: ls "$WORK"/home/.local/share/ddim-inversion/directions/*.safetensors

(define img (load-image "coat.png"))
(define photo (first-layer img))
(gimp-item-set-name photo "Coat")

(define group (plug-in-ddim-discover-directions #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:count 2 #:steps 10))
(check (string=? (gimp-item-get-name group) "Directions found in Coat") "the group's name")
(define strips (children group))
(check (= (length strips) 2) "one strip per direction")
(check (equal? (size (car strips)) '(96 32)) "a strip holds three edits side by side")
; "discovered-XXXXXX-1-h: −1 | 0 | +1" -> the direction's name.
(define (direction-of strip)
  (let* ((name (gimp-item-get-name strip))
         (colon (let loop ((i 0)) (if (char=? (string-ref name i) #\:) i (loop (+ i 1))))))
    (substring name 0 colon)))
(define found (direction-of (car strips)))
(note "found: " found)
(check (= (string-length found) (string-length "discovered-123456-1-h")) "named after the picture")
(define edit1 (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:direction found #:steps 10))
(export-layer edit1 "discovered.png")

(define (add-example file)
  (let ((layer (gimp-file-load-layer RUN-NONINTERACTIVE img (path file))))
    (gimp-image-insert-layer img layer 0 0)
    layer))
(define examples (vector (add-example "trouser-2.png") (add-example "trouser-3.png")
                         (add-example "trouser-5.png")))
(define fitted-group (plug-in-ddim-fit-direction #:run-mode RUN-NONINTERACTIVE #:image img
                       #:drawables examples #:name "my-trousers" #:steps 10))
(check (string=? (gimp-item-get-name fitted-group) "Direction my-trousers") "the fit's group")
(define edit2 (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
                #:drawables (vector photo) #:direction "my-trousers" #:steps 10))
(check (string=? (gimp-item-get-name edit2) "Edit of Coat: my-trousers ×1") "edit along it")
(export-layer edit2 "fitted.png")
(test-done)
