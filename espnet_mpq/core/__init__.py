"""Pure quantization math and modules. Imports torch only (never espnet or s3prl)."""
