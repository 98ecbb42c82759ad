;; Under a French locale the plug-in registers French menu labels (pluginrc).
;; env: LANG=fr_FR.UTF-8
;; env: LC_ALL=fr_FR.UTF-8
;; env: LANGUAGE=fr
;; post: grep -F '"Inverser en latent…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Reconstruire…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Modification sémantique…"' "$GIMP_PROFILE/pluginrc"
;; post: grep -F '"Interpoler les latents…"' "$GIMP_PROFILE/pluginrc"

(test-done)
