"""Data: the procedural layered world (:mod:`.world`, streamed or written to disk), the on-disk dataset format
(:mod:`.folder`), the VidLayer reader (:mod:`.vidlayer`), what clip sources share (:mod:`.source`), fitting video to a
shape (:mod:`.fit`) and the data engine behind ``layert2v data build`` (:mod:`.engine`).

Nothing is imported here, so that ``layert2v.data.fit`` (probing a video before any model loads) stays light and
``python -m layert2v.data.vidlayer DIR`` runs cleanly; import from the modules themselves.
"""
