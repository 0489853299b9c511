"""The code that runs inside the AWS Lambda function (the container image's handler), apart from the submitting side.

handler.py is the entry point; scope.py what the function may touch (from its environment); objects.py its
own S3 calls. It imports the package's data, engines and inference, never cosmicai.aws.
"""
