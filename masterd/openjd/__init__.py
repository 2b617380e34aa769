"""
Open Job Description (jobtemplate-2023-09) in masterd: a template and its
parameter values, decoded, checked and instantiated with openjd-model
(never a parser of our own), become a job of layers and tasks
(docs/openjd.md).

- L{openjdJobSpec}: a submission with C{openjd} as the internal job spec;
- L{instantiate}: the template and parameter values as openjd-model's Job;
- L{hostRequirements}: a step's host requirements as masterd's
  requirements (a plain dict);
- L{taskParameters}: a step's parameter space as its tasks' parameter sets.
"""

from ._job import layerRequirements, openjdJobSpec
from ._mapping import STANDARD_AMOUNTS, STANDARD_ATTRIBUTES, hostRequirements, taskParameters
from ._template import SUPPORTED_EXTENSIONS, instantiate

__all__ = [
    "STANDARD_AMOUNTS",
    "STANDARD_ATTRIBUTES",
    "SUPPORTED_EXTENSIONS",
    "hostRequirements",
    "instantiate",
    "layerRequirements",
    "openjdJobSpec",
    "taskParameters",
]
