"""Benchmarks: the CAI method against this project's engines (`cosmicai bench`), pipeline scaling, the GPU path,
reading row ranges from S3 (`python -m cosmicai.bench.s3_read`) and the Lambda profile's traffic (`python -m cosmicai.bench.lambda_s3`)."""
