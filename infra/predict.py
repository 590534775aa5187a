"""The predict function and its Function URL.

Predict runs outside the VPC: it needs only S3 (model artifacts), SSM (champion pointer) and SQS
(prediction events), never the database.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from infra import names
from infra.config import DeploymentConfig
from infra.events_queue import EventsQueue
from infra.image_function import ImageFunction
from infra.model_registry import ModelRegistry

TIMEOUT = cdk.Duration.seconds(15)
MEMORY_MIB = 1024  # scikit-learn import and model load at cold start want the CPU share that comes with it


def predict_construct_id(config: DeploymentConfig, model_name: str) -> str:
    """``Predict`` for the first model (the single-model ids, so adding models keeps its URL), else
    ``Predict-<model>``."""
    return "Predict" if model_name == config.model_names[0] else f"Predict-{model_name}"


class Predict(Construct):
    """One model's predict function, granted only what it reads and sends, behind its own Function URL.

    :param model_name: the model it serves (``SML_MODEL_NAME``); it may read that model's
        artifacts and champion pointer only.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        registry: ModelRegistry,
        events: EventsQueue,
        model_name: str,
    ) -> None:
        super().__init__(scope, construct_id)
        self.model_name = model_name
        self.image = ImageFunction(
            self,
            "Image",
            dockerfile=names.PREDICT_DOCKERFILE,
            description=f"{config.deployed_app_name} predict: serves the champion {model_name} model",
            environment={
                names.ENV_APP_NAME: config.deployed_app_name,
                names.ENV_MODEL_NAME: model_name,
                names.ENV_BUCKET: registry.bucket.bucket_name,
                names.ENV_QUEUE_URL: events.queue.queue_url,
                names.ENV_CAPTURE_SAMPLING_RATE: str(config.capture_sampling_rate),
                names.ENV_CAPTURE_FAIL_CLOSED: "false",
                names.ENV_CAPTURE_MODE: config.capture_mode,
                names.ENV_PREDICT_RANGE_WARNINGS: str(config.predict_range_warnings).lower(),
                names.ENV_CHAMPION_TTL_SECONDS: str(config.champion_ttl_seconds),
                names.ENV_POWERTOOLS_SERVICE_NAME: "predict",
                names.ENV_POWERTOOLS_METRICS_NAMESPACE: config.deployed_app_name,
            },
            memory_mib=MEMORY_MIB,
            timeout=TIMEOUT,
            # A public URL is a bill anyone can run up: cap what it can cost per second.
            reserved_concurrency=config.predict_reserved_concurrency if config.function_url_auth == "NONE" else None,
        )
        self.function = self.image.function
        registry.grant_model_read(self.image.role, [model_name])
        registry.grant_champion_read(self.image.role, [model_name])
        events.queue.grant_send_messages(self.image.role)

        auth_type = lambda_.FunctionUrlAuthType[config.function_url_auth]
        self.url = self.function.add_function_url(auth_type=auth_type)
        # What a caller needs (since October 2025 a Function URL checks both actions); the
        # InvokeFunction grant holds only through the URL, so it cannot bypass it with the Invoke API.
        self.caller_policy = iam.ManagedPolicy(
            self,
            "CallerPolicy",
            # The first model's keeps the single-model text: a new description would replace the policy.
            description=f"Call the {config.deployed_app_name} predict Function URL (and nothing else)"
            if model_name == config.model_names[0]
            else f"Call the {config.deployed_app_name} predict Function URL of {model_name} (and nothing else)",
            statements=[
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunctionUrl"],
                    resources=[self.function.function_arn],
                    conditions={"StringEquals": {"lambda:FunctionUrlAuthType": config.function_url_auth}},
                ),
                iam.PolicyStatement(
                    actions=["lambda:InvokeFunction"],
                    resources=[self.function.function_arn],
                    conditions={"Bool": {"lambda:InvokedViaFunctionUrl": "true"}},
                ),
            ],
        )
        if auth_type is lambda_.FunctionUrlAuthType.NONE:
            cdk.Annotations.of(self.url).add_warning_v2(
                "sml:function-url-auth-none",
                f"Context {names.CTX_FUNCTION_URL_AUTH}=NONE: anyone who knows the predict URL can call it and run "
                "up your bill. Keep the default AWS_IAM unless something in front of it authenticates callers.",
            )
