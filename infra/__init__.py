"""The CDK app that deploys serverless-ml to AWS (see docs/deploy.md).

Importing this package builds nothing: :func:`infra.app.build_app` does, and ``cdk.json`` runs
:func:`infra.app.main`.
"""
