"""Record builders, above the task library: they write records with the tasks' prompts and answers.

* :mod:`medrega.builders.annotations`: annotations people already have (COCO boxes or masks, reports,
  label tables) -> detection, identification, report and classification records;
* :mod:`medrega.builders.public_annotations`: readers for public annotation files (IU X-Ray, NIH
  ChestX-ray14, VinDr-CXR, v7labs lung masks) that give the inputs of those builders;
* :mod:`medrega.builders.medmat_questions`: Med-MAT-style single-choice questions from the labelled
  images of one subset (:func:`~medrega.builders.medmat_questions.mat_questions`);
* :mod:`medrega.builders.phantom_records`: records of synthetic phantoms for every task
  (:func:`~medrega.builders.phantom_records.make_phantom_dataset`).
"""
