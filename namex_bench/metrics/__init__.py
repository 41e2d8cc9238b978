"""Evaluation metrics: corruption errors and mCE, ImageNet-A/R class subsets."""
