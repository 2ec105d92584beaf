"""Installs crossmodal_hash: `pip install -e .` (add `[test]` for the test suite)."""
import pathlib

import setuptools

_HERE = pathlib.Path(__file__).parent


def _requirements(name: str) -> list[str]:
  lines = (_HERE / name).read_text().splitlines()
  return [l.split('#')[0].strip() for l in lines
          if l.split('#')[0].strip() and not l.startswith('-r')]


setuptools.setup(
    name='crossmodal_hash',
    version='0.1.0',
    description='Deep cross-modal hashing in JAX/Flax: SSAH and friends, '
                'sharded training, exact evaluation.',
    long_description=(_HERE / 'README.md').read_text(),
    long_description_content_type='text/markdown',
    python_requires='>=3.11',
    packages=setuptools.find_packages(include=['crossmodal_hash', 'crossmodal_hash.*']),
    install_requires=_requirements('requirements.txt'),
    extras_require={
        'test': _requirements('requirements-test.txt'),
        'faiss': ['faiss-cpu>=1.8,<2'],
        # gs:// workdirs: etils.epath's Cloud Storage backend (gcsfs).
        'gcs': ['etils[epath,epath-gcs]>=1.7,<2'],
        'tfds': ['tensorflow-datasets>=4.9.4,<5', 'importlib_resources>=6'],
    },
)
