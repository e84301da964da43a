"""The contract every part of ijepa-deploy shares, torch-free and at the bottom of the imports: the
typed manifest, precision facts, file naming, artifact identity, integrity, atomic writes, errors,
and the collection format. It imports nothing of ours from above."""
