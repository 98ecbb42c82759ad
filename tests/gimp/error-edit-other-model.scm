;; Semantic edit with directions made for another model: one of another
;; shape (caught), and a pooled one of the same channel count, told apart
;; by the model hash it records.
;; pre: "$CLI" directions pca "$MODEL_CIFAR" -k 1 -n 2 --steps 3 -q -o spatial.safetensors
;; pre: "$CLI" directions pca "$MODEL_CIFAR" -k 1 -n 2 --steps 3 --pool -q -o pooled.safetensors
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-semantic-edit failed
;; expect-output: Direction “pca-1” cannot be used with the model in “
;; expect-output: was made for another model (weights SHA-256
;; expect-output: Use directions made for this model.

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define (edit file)
  (lambda ()
    (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
      #:drawables (vector photo) #:model-folder model-variant #:steps 3
      #:direction (path file) #:strength 1.0)))
(expect-failure img (edit "spatial.safetensors"))
(expect-failure img (edit "pooled.safetensors"))
((edit "pooled.safetensors"))
