"""The review loop: label folders out to review tools (CVAT, Label Studio, FiftyOne, COCO, YOLO-seg),
corrected labels back in, the review order and the report page.

Sits beside ``train`` (reads label folders, may call evaluate); never imports ``cli``.
"""
