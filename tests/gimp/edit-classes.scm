;; Semantic edit on the embedded model with only a direction given
;; (everything else its default): the coat of Fashion-MNIST test image 6
;; (models/fashion-mnist-32/samples) becomes what the project's classifier
;; (models/fashion-mnist-classifier) calls the target class, for three
;; targets. The source itself is classified as a coat first.
;; needs: default-model
;; pre: cp "$DEFAULT_MODEL/samples/fashion-mnist-test-006.png" coat.png
;; pre: "$CHECK" classify coat.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --expect coat
;; post: "$CHECK" classify to-sneaker.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --expect sneaker
;; post: "$CHECK" classify to-trouser.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --expect trouser
;; post: "$CHECK" classify to-bag.png "$DEFAULT_MODEL/../fashion-mnist-classifier" --expect bag

(define img (load-image "coat.png"))
(define photo (first-layer img))

(define (edit-to class)
  (let ((layer (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
                 #:drawables (vector photo) #:direction class)))
    (check (string=? (gimp-item-get-name layer)
                     (string-append "Edit of " (gimp-item-get-name photo) ": " class " ×1"))
           (string-append class ": layer name"))
    (check (equal? (size layer) '(32 32)) (string-append class ": the layer's size"))
    (export-layer layer (string-append "to-" class ".png"))
    (gimp-item-set-visible layer #f)))

(edit-to "sneaker")
(edit-to "trouser")
(edit-to "bag")
(test-done)
