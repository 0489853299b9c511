"""AWS Lambda backend: the function (handler), the invoker, deployment and Lambda pricing.

Only `handler` and `invoker`/`deploy` need boto3; `settings` and `cost` import nothing heavy.
"""
