"""Files on disk: video files (:mod:`.codec`) and the layered-video directory (:mod:`.layered_dir`)."""
