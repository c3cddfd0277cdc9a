"""Zero-shot labeling: SAM masks, CLIP classes, label maps, and the dataset job."""
