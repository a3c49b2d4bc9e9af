"""Training engine behind train_classifier.py: recipes (the papers' hyper-parameters) and a resumable loop."""
