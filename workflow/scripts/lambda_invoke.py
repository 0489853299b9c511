#!/usr/bin/env python3
"""Infer a job's partitions on AWS Lambda: the inference rule's command under the lambda backend.

Thin entry point over cosmicai.aws.lambda_job (see there, or --help).
"""

import sys

from cosmicai.aws.lambda_job import main

if __name__ == "__main__":
    sys.exit(main())
