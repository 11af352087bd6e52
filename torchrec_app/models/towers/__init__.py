"""Dense towers over the shared sparse arch: DLRM, DCNv2, DCNv3, MaskNet and a plain DNN."""
