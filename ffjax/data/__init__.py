"""FF++ data: layout, video decoding, masks, crops, face detection and the input pipeline."""
