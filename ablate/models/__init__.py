"""Models: mixers, the shared backbone, and the timm-registered named models.

(Placeholder while the models are being written; the public API is listed in the issue.)
"""
