"""Build-time tools (not deployed with the Lambda functions)."""
