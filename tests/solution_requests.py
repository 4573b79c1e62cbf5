"""CreateSolution request documents shared by the CreateSolution and HPO tests."""


def hpo_doc(**ranges):
    """An aws-hrnn CreateSolution request with HPO over ``ranges`` (algorithmHyperParameterRanges)."""
    return {
        "recipeArn": "arn:aws:personalize:::recipe/aws-hrnn",
        "performHPO": True,
        "solutionConfig": {
            "hpoConfig": {
                "hpoObjective": {"type": "Maximize", "metricName": "precision_at_25"},
                "hpoResourceConfig": {"maxNumberOfTrainingJobs": "8", "maxParallelTrainingJobs": "2"},
                "algorithmHyperParameterRanges": ranges,
            }
        },
    }
