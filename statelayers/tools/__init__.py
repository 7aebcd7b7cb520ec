"""Tools around the library, not needed to build or train a model: ``profile`` (parameters, MACs, memory traffic,
dispatched ops, the papers' tables), ``resolution`` (cost against input size), ``cam`` (Score-/Grad-CAM),
``demo`` (``statelayers demo``), ``export`` (a run as timm's hub folder). Import them by module; none is imported
by ``import statelayers``."""
