"""Model lifecycle (``sml train`` → S3 model registry → SSM champion pointer): train and track a run
(``training``, ``tracking``), describe it (``manifest``), store, promote and load it (``registry``).

``modeling`` holds the feature matrix both training and predict feed to the pipeline.
"""
