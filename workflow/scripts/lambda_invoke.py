#!/usr/bin/env python3
"""Infer a batch of partitions on AWS Lambda: the inference rule's command under the lambda backend.

Thin entry point over cosmicai.aws.batch_job (see there, or --help).
"""

import sys

from cosmicai.aws.batch_job import main

if __name__ == "__main__":
    sys.exit(main())
