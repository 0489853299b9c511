"""Local stand-ins for AWS services (Lambda Invoke + Runtime API) used by tests, CI and users without AWS."""
