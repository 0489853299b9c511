#!/usr/bin/env python3
"""Infer one partition on AWS Lambda: the inference rule's command under the lambda backend.

Thin entry point over cosmicai.aws.invoker (see there, or --help).
"""

import sys

from cosmicai.aws.invoker import main

if __name__ == "__main__":
    sys.exit(main())
