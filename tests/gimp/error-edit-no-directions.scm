;; Semantic edit by name with a model that has no directions.safetensors
;; (a file of several directions without #NAME, and a path that does not
;; exist, fail as well).
;; pre: "$CLI" directions pca "$MODEL_VARIANT" -k 2 -n 4 --steps 5 -q -o dirs.safetensors
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-semantic-edit failed
;; expect-output: has no directions file (directions.safetensors) and you have made no directions for it yet, so there is no direction “component-1”
;; expect-output: Discover directions… or Fit direction from layers…

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define (edit direction)
  (lambda ()
    (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
      #:drawables (vector photo) #:model-folder model-variant #:steps 3
      #:direction direction #:strength 1.0)))
(expect-failure img (edit (path "dirs.safetensors")))
(expect-failure img (edit (path "missing.safetensors")))
(expect-failure img (edit "component-1"))
((edit "component-1"))
