"""Dataset readers, the prepared 2D sample store and the case-level splits."""
