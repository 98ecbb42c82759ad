;; Semantic edit with a direction the directions file does not have: the
;; message lists the ones it has.
;; pre: "$CLI" directions pca "$MODEL_VARIANT" -k 2 -n 4 --steps 5 -q -o dirs.safetensors
;; expect-exit: 70
;; expect-output: Procedure execution of plug-in-ddim-semantic-edit failed
;; expect-output: There is no direction “smile” in “
;; expect-output: dirs.safetensors”; available: pca-1, pca-2.

(define img (image-with-layer "sample-gray.png" 28 28 0 0))
(define photo (find-layer img "Photo"))
(define (call)
  (plug-in-ddim-semantic-edit #:run-mode RUN-NONINTERACTIVE #:image img
    #:drawables (vector photo) #:model-folder model-variant #:steps 3
    #:direction (string-append (path "dirs.safetensors") "#smile") #:strength 1.0))
(expect-failure img call)
(call)
